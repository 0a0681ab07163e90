"""What the analysis scripts (scripts/studies/sharpness_vs_gap.py, gap_during_training.py, ...) run on, apart from the
torch-only measurement library ``gsam.analysis``: small tasks (demo digits, synthetic teacher, 2-D toy, a
trainer checkpoint), the one training loop they share, runs of the real trainer, summaries, and the scripts'
command line and output files. It may import anything (the trainer, data, models, Hydra, matplotlib); nothing
in the library or the trainer imports it. Nothing is imported here, so each script pulls in only what it uses.
"""
