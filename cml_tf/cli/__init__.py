"""What the commands (``python -m cml_tf.train``, ``.recommend``, ``.export``, ``.stats``) share: their output
and errors (`console`) and the data set flags (`data_flags`)."""
