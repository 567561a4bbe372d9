"""xbar.emulator"""
