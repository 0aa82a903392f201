"""Constitutional AI from the survey's constitution: principles, templates, batch generation.

Plain functions of files, tokenizers and tensors; the Ray Data edge is
:mod:`valign_ray.distributed.generation`.
"""
