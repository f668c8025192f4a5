"""Pure vision: finding, following and preparing faces, and the expression model.

No camera, network or threads here; the only I/O is `model_file` (trainer.yml).
"""
