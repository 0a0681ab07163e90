"""The evaluation sets (ImageNet val, ReaL, V2, R, C), their metrics and the GSAM paper's Table 1 layout."""
