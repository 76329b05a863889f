"""ferkit.evaluation"""
