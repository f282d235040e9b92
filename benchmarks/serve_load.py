"""Load figures for `gtr serve`: images/s and latency with --max-batch 1 against batching, side by side.

    python benchmarks/serve_load.py NAME=BUNDLE [NAME=BUNDLE ...] [--clients 1,8,32] [--out docs/bench/serve]

For every bundle two servers run at once on loopback (`gtr serve --max-batch 1` and `--max-batch B`),
and every client count is measured on both in alternating rounds (A B, then B A), so the two columns
share the machine's state. A client sends one request (num_images 1, Accept: image/png, its own class
and seed) at a time and the next when it is answered; a round makes `--requests-per-client` requests per
client after a warm-up round, bounded by `--round-limit` seconds; `--rounds` rounds per cell. images/s = answered images / wall time;
p50 / p99 are the latencies of every request of the cell (with a few hundred requests, p99 is close to
the maximum).

Then an overload run per bundle: a server with --queue 4, and 64 clients that each send
`--overload-requests` requests at once. Every answer must be a 200 or a 503, every 200 must carry its
own request's image (checked against the pipeline's image for that class and seed, within one pixel
level), and the server must answer /health and a request afterwards.

Writes serve_load.json and serve_load.md into --out.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, bundle: str, *args: str):
        cmd = [sys.executable, "-m", "gtr", "serve", bundle, "--port", "0", "--no-access-log", "--log-level",
               "warning", *args]
        self.args = args
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
        self.url, self.log = None, []
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                if " on http://" in line and self.url is None:
                    self.url = line.split(" on ", 1)[1].split("/ ", 1)[0]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300) or self.url is None:
            self.proc.kill()
            raise SystemExit("server did not start:\n" + "".join(self.log))

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(120)


async def one(client, url, cls, seed):
    t0 = time.perf_counter()
    r = await client.post(url + "/v1/generate", json={"class": cls, "seed": seed}, headers={"accept": "image/png"})
    return r.status_code, time.perf_counter() - t0, r.content, r.headers.get("x-gtr-batch-size", "")


async def load_round(url, clients: int, per_client: int, limit_s: float, num_classes: int, seed0: int):
    import httpx
    latencies, batches, answered = [], [], 0
    deadline = time.perf_counter() + limit_s
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as client:
        async def worker(k):
            nonlocal answered
            for j in range(per_client):
                if time.perf_counter() > deadline:
                    return
                status, seconds, _, batch = await one(client, url, (k * 7 + j) % num_classes, seed0 + k * 1000 + j)
                if status != 200:
                    raise SystemExit(f"load round: status {status} from {url}")
                latencies.append(seconds)
                batches.append(int(batch.split(",")[0]))
                answered += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return dict(images=answered, seconds=wall, latencies=latencies, batches=batches)


def summary(rounds: list[dict]) -> dict:
    lat = np.array([x for r in rounds for x in r["latencies"]])
    images = sum(r["images"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    batches = [b for r in rounds for b in r["batches"]]
    return dict(images=images, seconds=round(seconds, 3), images_per_s=round(images / seconds, 3),
                p50_s=round(float(np.percentile(lat, 50)), 3), p99_s=round(float(np.percentile(lat, 99)), 3),
                mean_batch=round(float(np.mean(batches)), 2), requests=len(lat))


async def overload(bundle: str, clients: int, per_client: int, num_classes: int, max_batch: int) -> dict:
    import httpx
    from PIL import Image

    from gtr.pipeline import Pipeline
    server = Server(bundle, "--queue", "4", "--max-batch", str(max_batch))
    try:
        statuses, ok = {}, []
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as client:
            async def worker(k):
                for j in range(per_client):
                    cls, seed = (k + j) % num_classes, 50_000 + k * 100 + j
                    status, _, content, _ = await one(client, server.url, cls, seed)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        ok.append((cls, seed, content))

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(clients)))
            wall = time.perf_counter() - t0
            health = (await client.get(server.url + "/health")).status_code
            after = (await one(client, server.url, 1, 7))[0]
    finally:
        code = server.stop()
    with Pipeline(bundle, device="cpu") as pipe:  # each 200's image against its own request's image
        wrong = 0
        for cls, seed, content in ok:
            got = np.asarray(Image.open(io.BytesIO(content)).convert("RGB")).astype(int)
            want = pipe.generate_items([(cls, seed, 0)])[0].astype(int)
            wrong += int(np.abs(got - want).max() > 1)
    return dict(clients=clients, requests=clients * per_client, queue=4, max_batch=max_batch,
                statuses={str(k): v for k, v in sorted(statuses.items())},
                other_than_200_503=sum(v for k, v in statuses.items() if k not in (200, 503)),
                checked_200=len(ok), wrong_images=wrong, health_after=health, request_after=after,
                exit_code_after_sigterm=code, seconds=round(wall, 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", metavar="NAME=BUNDLE")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-batch", type=int, default=16, help="the batching server's --max-batch")
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads per server")
    ap.add_argument("--requests-per-client", default="6,3,2", help="per client count, in --clients order")
    ap.add_argument("--rounds", default="4,4,2", help="rounds per mode and client count, in --clients order")
    ap.add_argument("--round-limit", type=float, default=60.0, help="seconds; a round stops issuing after it")
    ap.add_argument("--overload-clients", type=int, default=64, help="0: no overload run")
    ap.add_argument("--overload-requests", type=int, default=2, help="requests per overload client")
    ap.add_argument("--out", default=str(ROOT / "docs/bench/serve"))
    args = ap.parse_args()
    from gtr.runtime.bundle import read_bundle

    counts = [int(c) for c in args.clients.split(",")]
    per = [int(c) for c in args.requests_per_client.split(",")]
    rounds_per = [int(c) for c in args.rounds.split(",")]
    extra = ["--threads", str(args.threads)] if args.threads else []
    result = dict(machine=dict(cpus=os.cpu_count(), python=platform.python_version(), platform=platform.platform()),
                  settings=vars(args), started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), bundles={})
    for spec in args.bundles:
        name, path = spec.split("=", 1)
        bundle = read_bundle(path)
        num_classes, size = bundle.config.num_classes, bundle.config.img_size
        bundle.close()
        print(f"== {name}: {path}", flush=True)
        modes = {"max-batch 1": Server(path, "--max-batch", "1", *extra),
                 f"max-batch {args.max_batch}": Server(path, "--max-batch", str(args.max_batch), "--max-wait-ms",
                                                       str(args.max_wait_ms), *extra)}
        cells: dict = {m: {} for m in modes}
        try:
            for clients, per_client, n_rounds in zip(counts, per, rounds_per):
                rounds = {m: [] for m in modes}
                for m, server in modes.items():  # warm-up: every batch shape this client count makes
                    asyncio.run(load_round(server.url, clients, 1, args.round_limit, num_classes, 900_000))
                order = list(modes)
                for r in range(n_rounds):
                    for m in (order if r % 2 == 0 else order[::-1]):
                        rounds[m].append(asyncio.run(load_round(modes[m].url, clients, per_client, args.round_limit,
                                                                num_classes, 1000 * r)))
                for m in modes:
                    cells[m][clients] = summary(rounds[m])
                line = "  ".join(f"{m}: {cells[m][clients]['images_per_s']:.2f} img/s p50 {cells[m][clients]['p50_s']:.2f}"
                                 f" p99 {cells[m][clients]['p99_s']:.2f}" for m in modes)
                print(f"  {clients:3d} clients  {line}", flush=True)
        finally:
            codes = {m: s.stop() for m, s in modes.items()}
        over = None
        if args.overload_clients > 0:
            over = asyncio.run(overload(path, args.overload_clients, args.overload_requests, num_classes, args.max_batch))
            print(f"  overload: {over}", flush=True)
        result["bundles"][name] = dict(path=str(path), image_size=size, num_classes=num_classes, cells=cells,
                                       exit_codes=codes, overload=over)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "serve_load.md").write_text(markdown(result, args.max_batch))
    print(f"wrote {out / 'serve_load.json'} and {out / 'serve_load.md'}")


def markdown(result: dict, max_batch: int) -> str:
    b = f"max-batch {max_batch}"
    lines = [f"# gtr serve under load ({result['started']}, {result['machine']['cpus']} CPUs, loopback)", "",
             "| bundle | clients | images/s, max-batch 1 | images/s, batching | speedup | p50 / p99 s, max-batch 1 "
             "| p50 / p99 s, batching | mean batch |", "|---|---|---|---|---|---|---|---|"]
    for name, r in result["bundles"].items():
        one, many = r["cells"]["max-batch 1"], r["cells"][b]
        for clients in one:
            o, m = one[clients], many[clients]
            lines.append(f"| {name} | {clients} | {o['images_per_s']:.2f} | {m['images_per_s']:.2f} | "
                         f"**{m['images_per_s'] / o['images_per_s']:.2f}x** | {o['p50_s']:.2f} / {o['p99_s']:.2f} | "
                         f"{m['p50_s']:.2f} / {m['p99_s']:.2f} | {m['mean_batch']:.1f} |")
    lines += ["", "Overload (queue 4):", "", "| bundle | clients x requests | answers | other than 200/503 | "
              "200s with their own image | /health and a request after |", "|---|---|---|---|---|---|"]
    for name, r in result["bundles"].items():
        o = r["overload"]
        if o is None:
            continue
        answers = ", ".join(f"{v} x {k}" for k, v in o["statuses"].items())
        lines.append(f"| {name} | {o['clients']} x {o['requests'] // o['clients']} | {answers} | "
                     f"{o['other_than_200_503']} | {o['checked_200'] - o['wrong_images']} of {o['checked_200']} | "
                     f"{o['health_after']}, {o['request_after']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
