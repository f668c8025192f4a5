"""One module per ``edged`` command; `edged.cli` registers them."""
