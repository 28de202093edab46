"""``clip-dinoiser-demo``: the node end to end on real photos (see stream_photos)."""
