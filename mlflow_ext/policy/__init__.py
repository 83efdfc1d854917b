"""The promotion policy, shared by the client's ``promote`` and the server's enforcement.

``rules`` reads the policy file, ``gates`` checks a candidate version against it, ``audit`` holds the
``promotion.*`` tags written before an alias moves. docs/promotion.md describes the format.
"""
