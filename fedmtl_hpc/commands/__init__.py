"""CLI subcommands that live in their own modules.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``; importing it must be cheap (no torch, no MPI at import
time). ``cli.py`` registers every module named in ``COMMANDS``.
"""

COMMANDS = {
    "topology": "fedmtl_hpc.commands.topology",      # decentralized graphs (issue 3)
    "partition": "fedmtl_hpc.commands.partition",    # dataset splits (issue 4)
    "render-job": "fedmtl_hpc.commands.render_job",  # Slurm / PBS scripts (issue 5)
    "compare": "fedmtl_hpc.commands.compare",        # methods x seeds tables (issue 10)
    "report": "fedmtl_hpc.commands.report",          # matplotlib figures of runs (issue 10)
}
