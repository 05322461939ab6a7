"""Shared helpers of every layer: argument checks, file names, the tensor checksum, the one reader of every file,
several processes through Accelerate, threads for the CPU fits and progress bars. They import nothing else from
hf_fcr."""
