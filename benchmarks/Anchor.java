// The Java anchor of `make bench`: the job streamstop does, minus the HTTP, written plainly
// with the Java Kafka client and Jackson, the bar users compare a Kafka service against.
//
// poll -> Jackson-parse each value -> build the result JSON streamstop builds
// (streamstop/core/results.py) -> send (idempotent, acks=all, linger 5 ms, 1 MiB batches)
// -> flush -> commitSync, until the group's committed offsets cover every record present
// at start. Then it prints its own peak RSS for the harness and exits.
//
// Usage: java -cp CLASSES:KAFKA_LIBS/* Anchor BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC GROUP
// Compiled by benchmarks/bench.py against the jars scripts/kafka.sh fetches.

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class Anchor {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Pattern UUID_TEXT =
            Pattern.compile("[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}");
    private static final DateTimeFormatter MILLIS =
            DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);
    // Same poll size as benchmarks/ceiling.py (the client's default is 500).
    private static final int MAX_POLL_RECORDS = 10_000;

    // The first failed send, seen by the producer's I/O thread; checked after each flush.
    private static volatile Exception failure;
    private static final Callback REMEMBER_FAILURE =
            (metadata, exception) -> {
                if (exception != null && failure == null) {
                    failure = exception;
                }
            };

    private Anchor() {}

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String input = args[1];
        String output = args[2];
        String group = args[3];
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProps(bootstrap, group));
                KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps(bootstrap))) {
            consumer.subscribe(List.of(input));
            List<TopicPartition> partitions =
                    consumer.partitionsFor(input).stream()
                            .map(p -> new TopicPartition(input, p.partition()))
                            .toList();
            Map<TopicPartition, Long> ends = consumer.endOffsets(partitions);
            Map<TopicPartition, Long> committed = new HashMap<>();
            while (!covered(ends, committed)) {
                ConsumerRecords<byte[], byte[]> polled = consumer.poll(Duration.ofMillis(100));
                if (polled.isEmpty()) {
                    continue;
                }
                String receivedAt = MILLIS.format(Instant.now());
                String batchId = UUID.randomUUID().toString();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (TopicPartition tp : polled.partitions()) {
                    List<ConsumerRecord<byte[], byte[]>> records = polled.records(tp);
                    String completedAt = MILLIS.format(Instant.now());
                    for (ConsumerRecord<byte[], byte[]> record : records) {
                        producer.send(result(record, output, batchId, receivedAt, completedAt), REMEMBER_FAILURE);
                    }
                    offsets.put(tp, new OffsetAndMetadata(records.get(records.size() - 1).offset() + 1));
                }
                producer.flush();
                if (failure != null) {
                    throw failure;
                }
                consumer.commitSync(offsets);
                offsets.forEach((tp, offset) -> committed.put(tp, offset.offset()));
            }
        }
        System.out.printf(Locale.ROOT, "peak_rss_mb=%.1f%n", peakRssMb());
    }

    private static Properties consumerProps(String bootstrap, String group) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, MAX_POLL_RECORDS);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        return props;
    }

    private static Properties producerProps(String bootstrap) {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        props.put(ProducerConfig.BATCH_SIZE_CONFIG, 1024 * 1024);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        return props;
    }

    private static boolean covered(Map<TopicPartition, Long> ends, Map<TopicPartition, Long> committed) {
        for (Map.Entry<TopicPartition, Long> end : ends.entrySet()) {
            if (committed.getOrDefault(end.getKey(), 0L) < end.getValue()) {
                return false;
            }
        }
        return true;
    }

    /** The result event for one record, keyed by its uuid, with the input's headers. */
    private static ProducerRecord<byte[], byte[]> result(
            ConsumerRecord<byte[], byte[]> record,
            String output,
            String batchId,
            String receivedAt,
            String completedAt)
            throws java.io.IOException {
        String uuid = null;
        String requestId = null;
        String error = null;
        JsonNode value = parse(record.value());
        JsonNode rawUuid = value == null ? null : value.get("messageUuid");
        if (rawUuid != null && rawUuid.isTextual() && UUID_TEXT.matcher(rawUuid.textValue()).matches()) {
            uuid = rawUuid.textValue().toLowerCase(Locale.ROOT);
            JsonNode rawRequestId = value.get("requestId");
            requestId = rawRequestId != null && rawRequestId.isTextual() ? rawRequestId.textValue() : null;
        } else {
            error = "no valid messageUuid";  // answered invalid, as streamstop would
        }
        ObjectNode out = JSON.createObjectNode();
        out.put("schemaVersion", 1);
        out.put("messageUuid", uuid);
        out.put("status", uuid == null ? "invalid" : "stopped");
        if (uuid == null) {
            out.putNull("code");
        } else {
            out.put("code", 200);
        }
        out.put("error", error);
        out.put("requestId", requestId);
        ObjectNode source = out.putObject("source");
        source.put("topic", record.topic());
        source.put("partition", record.partition());
        source.put("offset", record.offset());
        out.put("batchId", uuid == null ? null : batchId);
        out.put("attempts", uuid == null ? 0 : 1);
        out.put("receivedAt", receivedAt);
        out.put("completedAt", completedAt);
        byte[] key = uuid == null ? null : uuid.getBytes(StandardCharsets.UTF_8);
        return new ProducerRecord<>(output, null, null, key, JSON.writeValueAsBytes(out), record.headers());
    }

    private static JsonNode parse(byte[] value) {
        if (value == null) {
            return null;
        }
        try {
            return JSON.readTree(value);
        } catch (java.io.IOException notJson) {
            return null;
        }
    }

    /** This process's high-water RSS (VmHWM), in MB. */
    private static double peakRssMb() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) / 1024.0;
            }
        }
        return 0.0;
    }
}
