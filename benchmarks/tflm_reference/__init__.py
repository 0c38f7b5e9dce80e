"""TensorFlow Lite Micro's reference int8 kernels in C, the measuring stick of
``benchmarks/kernel_compare.py``: ``tflm_reference.c`` (edgeopt's implementation of their
arithmetic and loop structure from the documented behaviour; no TFLM source), :mod:`.port` (its
host build and TFLM's Prepare arithmetic), :mod:`.emulate` (edgeopt's layers through it on
QEMU)."""
