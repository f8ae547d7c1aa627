"""firmware_sim"""
