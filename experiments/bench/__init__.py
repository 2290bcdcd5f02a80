"""The speed benchmarks: ``python -m experiments.bench <subcommand> [flags]`` (`experiments.bench.__main__`).

One module per subcommand (``add_arguments(parser)``, ``run(args) -> list[Table]``); what they share lives once:
`report` (the table format, the results files), `timing` (timing loops, A/B rounds, training, the floors), `flags`
(the common flags, one-line errors). `floor_n.py` is a stand-alone script: the hinge floor at any |N_ij|.
"""
