"""The SFU: one process per meeting that forwards encoded media between participants.

``konfer sfu --meeting <id>`` runs it (see ``server``); the api's ``MediaRouter`` talks to
it over the control API in ``control``. Media never gets decoded or encoded here: the
receiver hooks in ``aiortc_hooks`` hand publishers' RTP payloads straight to every
subscriber (``forwarding``).
"""
