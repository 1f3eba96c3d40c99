#include "services/metrics.h"

namespace kpistream::services {

void CollectStore(const state::Store& store, MetricFamilies* out) {
  auto gauge = [&](const char* name, const char* help, double v) { AddGauge(out, name, help, v); };
  {
    const auto st = store.Stats();
    gauge("kpistream_state_live_bytes", "Estimated live data in the state store.",
          static_cast<double>(st.live_data_bytes));
    gauge("kpistream_state_sst_bytes", "Size of the state store's SST files.", static_cast<double>(st.sst_files_bytes));
    gauge("kpistream_state_memtable_bytes", "Memory held by the state store's memtables.",
          static_cast<double>(st.memtable_bytes));
    gauge("kpistream_state_block_cache_bytes", "State block-cache usage (memtables are charged to it).",
          static_cast<double>(st.block_cache_usage_bytes));
    gauge("kpistream_state_table_readers_bytes",
          "Memory of the state store's open tables outside the block cache (index and bloom filter blocks).",
          static_cast<double>(st.table_readers_bytes));
    gauge("kpistream_state_pending_compaction_bytes", "Bytes the state store estimates compaction must rewrite.",
          static_cast<double>(st.pending_compaction_bytes));
    gauge("kpistream_state_running_compactions", "Compactions running now.",
          static_cast<double>(st.running_compactions));
    gauge("kpistream_state_keys", "Estimated number of keys in the state store.",
          static_cast<double>(st.estimated_keys));
  }
}

}  // namespace kpistream::services
