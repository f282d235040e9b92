"""PyTorch reference: MAR backbone, diffusion MLP, KL VAE, checkpoint IO."""
