"""Remotes: S3-compatible storage or a folder, push/fetch/pull/clone/verify, automatic backup.

- :mod:`.backend`  the key/value interface a remote is stored through (S3, folder)
- :mod:`.spec`     named remotes in config.toml (url, endpoint, region; never credentials)
- :mod:`.sync`     push, fetch, pull, clone, verify, repair
- :mod:`.backup`   the backup after each commit (run by :mod:`.hook`), backup status

Submodules load when used: registering the backup hook must not load the push machinery.
"""
