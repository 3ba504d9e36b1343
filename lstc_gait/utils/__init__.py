"""Small helpers every room uses: atomic file output (:mod:`.fileio`) and path resolution (:mod:`.paths`)."""
