"""The checks a composed config passes before anything is built: known keys, numbers in range, one consistent
batch plan."""
