"""The gtr commands, one module per command; gtr.cli assembles them."""
