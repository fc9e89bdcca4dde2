"""Media handling below the routes: format tables and sniffing, PyAV probing and
operations, streamed multipart uploads, and the durable job worker.

Nothing here knows about HTTP requests except ``upload`` (which reads one); the routers
``routers.media`` / ``routers.ffmpeg`` and the services ``services.media`` /
``services.jobs`` call into it, and ``konfer worker`` runs ``worker.Worker``.
"""
