export * from "./client.js";
export * from "./gen/smsgate/v1/message_pb.js";
export * from "./gen/smsgate/v1/sms_service_pb.js";
export * from "./gen/smsgate/v1/inbound_service_pb.js";
export * from "./gen/smsgate/v1/usage_service_pb.js";
export { Code } from "@connectrpc/connect";
