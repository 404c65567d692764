"""The base every layer may use: paths and defaults, atomic writes, user errors, label maps, boxes."""
