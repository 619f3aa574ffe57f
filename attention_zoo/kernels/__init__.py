"""Fused kernels, each with its pure-PyTorch reference beside it."""
