"""Shared helpers of every layer: argument checks, file names, the tensor checksum, the one reader of every file,
and several processes through Accelerate. They import nothing else from hf_fcr."""
