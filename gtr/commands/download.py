"""gtr download: the official weights into $GTR_HOME."""
from __future__ import annotations


import click

from gtr.commands.errors import friendly_errors
from gtr.paths import cache_dir


@click.command("download", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True,
              help="Print what would be fetched from where to where, and its size; fetch nothing.")
@friendly_errors
def download_cmd(models, dry_run):
    """Fetch the official weights of MODELS (mar-b, mar-l, mar-h, kl16) into $GTR_HOME (default ~/.cache/gtr).

    Each MAR model brings the KL-16 VAE. Partial files resume, sizes are checked, files appear only
    when complete, a file far from the official size (or not a checkpoint) is refused, and the sha256
    recorded at download (<file>.sha256) is verified on every later run. $GTR_MIRROR replaces the
    official URLs with a mirror of the same layout (where the official host cannot be reached).

    \b
    Examples:
      gtr download mar-b --dry-run        # URLs, destinations, sizes
      gtr download mar-l mar-h
      GTR_MIRROR=http://mirror.local/gtr gtr download mar-b
    """
    from gtr.download import SIZES, DownloadError, downloads, fetch, state
    try:
        files = downloads(models, cache_dir())
        for d in files:
            if dry_run:
                click.echo(f"{d.name}: {d.url}\n  -> {d.dest} [{state(d)}]")
            else:
                click.echo(f"{d.name}: {fetch(d)} ({d.dest})")
        if dry_run:
            size = sum(SIZES[d.name] for d in files if not d.dest.is_file())
            click.echo(f"to download: about {size / 2**30:.1f} GiB" if size else "nothing to download")
    except DownloadError as e:
        raise click.ClickException(str(e)) from None
