include $(sort $(wildcard $(BR2_EXTERNAL_POPSEED_PATH)/package/*/*.mk))
