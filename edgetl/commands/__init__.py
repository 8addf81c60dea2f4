"""What `edgetl bench` runs: re-measuring a run directory, and measuring a bundle on the device itself.

Beside the CLI (they are commands, not libraries): they read a run or a bundle, call the measuring
harness and the report, and write their own outputs.
"""
