"""MRML glue of the RadioGenomics Slicer module: plain functions on MRML nodes.

Nothing here imports `slicer` (the application) or `qt`: only numpy, vtk and the MRML
classes, so that pytest can run it against the `slicer-core` wheel's real MRML
libraries. It lives in a package, not beside RadioGenomics.py, because Slicer would
try to load every top-level .py file of a module folder as a module.
"""
