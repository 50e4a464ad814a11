"""`vlmdpo studio`: the alignment workflow as a local web app (data, train, monitor, lab, label, export).

The server does no training or generation work itself: it launches the same CLI commands as their own
processes and reads the files they write, so nothing in the studio can drift from `vlmdpo train`.
"""
