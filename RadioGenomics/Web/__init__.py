"""The RadioGenomics web viewer: the Slicer module's flow in a browser, on Slicer's own
libraries (trame-slicer: the MRML scene, slice and 3D views, rendered on the server).

`radiogenomics viewer` starts it. Like the Slicer module it is a thin shell: the
prediction runs as the `radiogenomics` command in a child process, and the MRML glue
(RadioGenomicsLogic/mrml.py) turns its files into nodes.
"""
