"""Training: pre-flight plan, fine-tuning with checkpoints in the store, runs, model commits from memory.

Modules (torch and transformers are imported lazily, inside functions):

- ``settings``   the training settings (flags, config file, ``[train]`` in config.toml)
- ``tensorio``   tensors <-> the store without a folder: safetensors built in memory, tagged JSON
- ``modelio``    a Hugging Face model in memory <-> a model tree (``save_pretrained``'s files)
- ``commit``     ``Repo.commit_model``: a model from memory as a new version
- ``dataset``    JSONL -> tokenized examples (plain text; chat with the loss on assistant turns)
- ``checkpoint`` a run's checkpoint: weights, optimizer/scheduler/RNG state, data position
- ``runs``       ``refs/runs/<run>``: listing, status, abandon, the per-run lock
- ``job``        what plan and training share: the base's tokenizer, the training cache, steps
- ``model``      the model being trained: device, precision, building it, the loss, the LR schedule
- ``plan``       the seven pre-flight checks
- ``estimate``   the plan's estimates: tokens trained, tokens/s, time
- ``trainer``    the training loop in phases (set up, resume, steps, checkpoints, the new version)
- ``session``    what the trainer's phases share, and the counters a checkpoint saves
- ``distributed`` torchrun / DDP helpers (rank 0 alone writes the store)
- ``goal``       progress toward ``goal.tokens`` along a lineage (``lin progress``)
"""
