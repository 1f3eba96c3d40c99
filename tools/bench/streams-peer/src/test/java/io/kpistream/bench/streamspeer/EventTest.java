package io.kpistream.bench.streamspeer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import com.google.protobuf.Timestamp;
import java.nio.charset.StandardCharsets;
import kpistream.events.v1.Events;
import org.junit.jupiter.api.Test;

class EventTest {
  private static byte[] utf8(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  @Test
  void flatJsonGivesTheMessageProtobufGives() {
    Events.CampaignEvent pb = Events.CampaignEvent.newBuilder().setEventId("e1")
        .setEventTime(Timestamp.newBuilder().setSeconds(1_800_000_000L).setNanos(123_000_000))
        .setType(Events.CampaignEventType.CAMPAIGN_CLICK).setCampaignId("c-17").setChannel("search")
        .setCost(0.12).build();
    Event fromPb = Event.decode(Family.CAMPAIGN, pb.toByteArray());
    Event fromJson = Event.decodeFlatJson(Family.CAMPAIGN, utf8(
        "{\"id\": \"e1\", \"ts\": 1800000000123, \"kind\": \"click\", \"campaign_id\": \"c-17\","
            + " \"channel\": \"search\", \"cost\": 0.12, \"region\": null}"));
    assertNull(fromJson.reject);
    assertEquals(fromPb.msg, fromJson.msg);
    assertEquals(fromPb.timeMs, fromJson.timeMs);
    assertEquals(fromPb.type, fromJson.type);
  }

  @Test
  void brokenRecordsAreRejectedAsKpidRejectsThem() {
    assertEquals("bad_json", Event.decodeFlatJson(Family.CAMPAIGN, utf8("{\"id\": ")).reject);
    assertEquals("unknown_type",
        Event.decodeFlatJson(Family.CAMPAIGN, utf8("{\"id\": \"a\", \"ts\": 1800000000000, \"kind\": \"nope\"}")).reject);
    assertEquals("bad_timestamp",
        Event.decodeFlatJson(Family.CAMPAIGN, utf8("{\"id\": \"a\", \"ts\": \"noon\", \"kind\": \"click\"}")).reject);
    assertEquals("bad_value", Event.decodeFlatJson(Family.CAMPAIGN,
        utf8("{\"id\": \"a\", \"ts\": 1800000000000, \"kind\": \"click\", \"cost\": \"x\"}")).reject);
  }
}
