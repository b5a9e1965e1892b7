"""RadioGenomics: predict a tumour's RNA-Seq expression profile from CT or MRI.

Plain Python: nothing here imports `slicer` or `qt`; the Slicer module wraps it.
"""

__version__ = "0.1.0"
