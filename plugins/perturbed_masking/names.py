"""The Perturbed Masking plugin's choices, importable without torch (the CLI offers them at start-up)."""

from __future__ import annotations

#: tree decoders over the impact matrix
ALGORITHMS = ("eisner", "cle")
#: distances between a word's masked and doubly-masked representations
DISTANCES = ("euclidean", "cosine")
#: which way the impact matrix is read as arc scores
ORIENTATIONS = ("paper", "transposed")
#: where the root's scores come from
ROOTS = ("cls", "matrix")
