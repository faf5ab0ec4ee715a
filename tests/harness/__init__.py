"""Real-registry test harness: registries, token issuer, fault proxy, images.

Never imports ``reconciler``: fixtures are built independently of the code
under test.
"""
