"""Cell-level building blocks: stain deconvolution, candidate finding, point matching, networks."""
