"""The building blocks of every checkpoint load and save, below models, training and inference.

    files.py       write_atomic and its family (the one way files are written), checksum
    safe_load.py   load_torch_file, read_weights: reading without running code
    format.py      what a path holds (CheckpointInfo, format detection, the DDP `module.` prefix)
    state_dict.py  load_state_dict_strict: every key and shape, all problems in one error

Imports only torch, the standard library and `deformable_detr.errors`.
"""
