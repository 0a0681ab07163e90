"""The evaluation sets (ImageNet val, ReaL, and the eval.sets entries: V2, R, C), their metrics, the GSAM paper's
Table 1 and Table 4 as data (tables) and the Table 1 layout of our runs (table1)."""
