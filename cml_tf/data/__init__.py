"""Data: raw files -> `Interactions` (``loaders``, ``interactions``), side information (``side_info``) and the
splits (``splits``). No TensorFlow here."""
