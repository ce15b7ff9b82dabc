-- The devices linked to a channel, which its members may name (GET /api/v1/channels/{id}/devices).
CREATE INDEX devices_by_channel ON devices (channel_id) WHERE channel_id IS NOT NULL;
