"""ferkit.app"""
