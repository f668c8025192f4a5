"""edged's benchmark: the workshop pipeline and edged's, on the same inputs, in one run.

``python -m bench`` (``make bench``) prints the comparison table; ``python -m bench soak``
runs the daemon on a looping clip and watches its CPU and memory from outside.
"""
