"""Layers shared by the model files: the depthwise Conv3d implementations (depthwise.py) and
vbench's Triton kernels for them (depthwise_triton.py, depthwise_op.py; imported only where used)."""
