"""The small export/runtime test model (8x8 grid) shared by several test modules.

Random except for its diffusion MLP, which is built to predict eps ~= x_t (a near-exact denoiser for
x0 = 0, plus small random terms that depend on t and z): an untrained MLP predicts eps ~= 0, so
x0 = x_t / sqrt(alpha_bar) and the tokens grow to ~6e4, where neither absolute errors nor fp16 mean
anything. With it, sampled tokens are O(1) like a trained model's, and the VAE output is scaled to span
about [-1, 1].
"""
import math

import torch

from gtr.configs import MARConfig, VAEConfig
from gtr.export.weights import random_models

# 8x8 token grid, 32x32 images: small enough for 2 shared CPU cores.
TINY = MARConfig(name="export-test", img_size=32, vae_stride=4, encoder_embed_dim=32, encoder_depth=1,
                 encoder_num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, diffloss_d=2,
                 diffloss_w=64, buffer_size=4, num_classes=10, token_dim=4,
                 vae=VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, embed_dim=4))


def tiny_models(seed=0):
    """Random MAR + VAE whose samples have realistic magnitudes (see tests/test_runtime_onnx.py)."""
    torch.manual_seed(seed)
    mar, vae = random_models(TINY, seed)
    net = mar.diffloss.net
    c, w, a = TINY.token_dim, TINY.diffloss_w, 10.0
    with torch.no_grad():
        W, b = torch.zeros(w, c), torch.zeros(w)
        for i in range(c):
            W[i, i], W[c + i, i] = 1.0, -1.0
        b[2 * c::2], b[2 * c + 1::2] = a, -a
        net.input_proj.weight.copy_(W)
        net.input_proj.bias.copy_(b)
        net.final_layer.adaLN_modulation[1].weight.mul_(1e-2)
        net.final_layer.adaLN_modulation[1].bias.mul_(1e-2)
        Wo = torch.zeros(2 * c, w)
        for i in range(c):
            Wo[i, i] = a * math.sqrt((w - 2 * c) / w)
        net.final_layer.linear.weight.copy_(Wo)
        net.final_layer.linear.bias.zero_()
        vae.decoder.conv_out.weight.mul_(25.0)
    return mar, vae


def tiny_graphs(models, folder, names):
    """The test model's graphs exported one by one (gtr.export.graphs): ({name: torch module},
    {name: OnnxGraph})."""
    from gtr.export.graphs import export_graph, graph_modules
    mods = graph_modules(*models, TINY.grid)
    return mods, {n: export_graph(n, mods[n], TINY, str(folder)) for n in names}
