"""The Konfer operator (``konfer operator``): kopf handlers for Meeting, Recording and
InferenceModel (group konfer.io) over pure builders of their child objects.

Layout: ``models`` parses custom resources, ``builders`` turns them into child manifests,
``status`` turns children's state into a resource's status, ``handlers`` wires those to
kopf and the API server, ``main`` runs it (leader election, probes, metrics).
"""
