"""Compute kernels. Each op has a readable PyTorch reference and faster forms behind one signature."""
