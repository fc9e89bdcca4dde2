"""Live streaming of a meeting (HLS, DASH, RTMP) by ``konfer streamer`` worker processes.

``worker`` subscribes to the SFU like the recorder and ``pipeline`` muxes (and where a
format demands it, transcodes) in its own thread; never inside the SFU process.
"""
