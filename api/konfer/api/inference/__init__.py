"""The api's side of AI: which model servers exist, and getting answers from them.

``runtime`` defines the interface a runtime implements (``local`` starts ``konfer
model-server`` processes; a ``kubernetes`` one would drive InferenceModel objects and read
their pods); ``service`` spreads requests over a model's ready servers, fails over when one
stops answering, and keeps the numbers the model/node/monitoring routes show; ``client``
speaks kserve's V1/V2 REST protocol. The api never imports ``konfer.ai``: it reaches model
servers over HTTP only.
"""
