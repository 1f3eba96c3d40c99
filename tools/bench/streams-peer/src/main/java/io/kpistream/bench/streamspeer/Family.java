package io.kpistream.bench.streamspeer;

import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import com.google.protobuf.Parser;
import java.util.ArrayList;
import java.util.List;
import kpistream.events.v1.Events;

/** The three event families: topic suffix, protobuf message, enum prefix of `type`. */
enum Family {
  CAMPAIGN("campaign", "CAMPAIGN_", Events.CampaignEvent.getDefaultInstance(), Events.CampaignEvent.parser()),
  PRODUCT("product", "PRODUCT_", Events.ProductEvent.getDefaultInstance(), Events.ProductEvent.parser()),
  CRM("crm", "CRM_", Events.CrmEvent.getDefaultInstance(), Events.CrmEvent.parser());

  /** Name in the catalog and suffix of the topic (`<prefix>campaign`). */
  final String id;
  /** Prefix of the `type` enum's value names, e.g. CAMPAIGN_ for CAMPAIGN_CLICK. */
  final String typePrefix;
  final Descriptor descriptor;
  final Message defaultInstance;
  final Parser<? extends Message> parser;
  final FieldDescriptor eventId;
  final FieldDescriptor eventTime;
  final FieldDescriptor type;
  /** Every double field, range-checked like kpid's decoder does. */
  final FieldDescriptor[] doubleFields;

  Family(String id, String typePrefix, Message defaultInstance, Parser<? extends Message> parser) {
    Descriptor d = defaultInstance.getDescriptorForType();
    this.defaultInstance = defaultInstance;
    this.id = id;
    this.typePrefix = typePrefix;
    this.descriptor = d;
    this.parser = parser;
    this.eventId = d.findFieldByNumber(1);
    this.eventTime = d.findFieldByNumber(2);
    this.type = d.findFieldByNumber(3);
    List<FieldDescriptor> doubles = new ArrayList<>();
    for (FieldDescriptor f : d.getFields()) {
      if (f.getJavaType() == FieldDescriptor.JavaType.DOUBLE && !f.isRepeated()) doubles.add(f);
    }
    this.doubleFields = doubles.toArray(new FieldDescriptor[0]);
  }

  static Family byId(String id) {
    for (Family f : values()) {
      if (f.id.equals(id)) return f;
    }
    return null;
  }
}
