"""Fixed choices of the library's options, kept free of heavy imports.

The command line lists them in `--help` and in its argument checks; defined here, not in
the modules that use them (expression, preprocess, cohort), so that building the parser
loads no numpy, pandas or SimpleITK.
"""

# expression: which STAR - Counts column is read, and how it is transformed
VALUES = {"fpkm_uq": "fpkm_uq_unstranded", "tpm": "tpm_unstranded", "counts": "unstranded"}
TRANSFORMS = ("log10p1", "log2p1", "none")

# preprocess: where intensities are z-scored
REGIONS = ("auto", "brain", "body", "none")

# TCIA series descriptions -> channels, tried in this order (first match wins)
TCIA_PATTERNS = {
    "flair": r"flair",
    "t1gd": r"t1.*(post|gd|gad|contrast|\+ ?c\b|\bc\+)|(post|gd|gad).*t1|mprage",
    "t1": r"t1",
    "t2": r"t2",
}
