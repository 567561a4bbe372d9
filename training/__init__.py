"""xbar.training"""
