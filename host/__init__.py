"""xbar.host"""
