// A module written with Microsoft's Node SDK, unmodified, driven by a test over stdin/stdout.
//
// Environment: EdgeHubConnectionString (the module's connection string with GatewayHostName),
// EdgeModuleCACertificateFile (the hub's CA), TRANSPORT (Amqp, AmqpWs, Mqtt or MqttWs).
// Each line on stdin is a JSON command; each line on stdout a JSON event:
//   {"op": "send", "output": "out", "body": "...", "properties": {...}, "messageId": "...", ...}
//        -> {"event": "sent", "id": ...} or {"event": "error", "id": ..., "error": "..."}
//   {"op": "twin"}                      -> {"event": "twin", "desired": {...}, "reported": {...}}
//   {"op": "report", "patch": {...}}    -> {"event": "reported"}
//   {"op": "inputs", "settle": "complete" | "reject" | "abandon"}  (listen for input messages)
//        each message -> {"event": "input", "inputName": ..., "body": ..., "properties": {...}, ...}
//   {"op": "method", "name": "reset", "status": 200, "payload": {...}}  (answer this method)
//        each call -> {"event": "method", "name": ..., "payload": ...}
//   {"op": "desired"}                   each desired patch -> {"event": "desired", "patch": {...}}
//   {"op": "close"}                     -> {"event": "closed"}, then the process exits
'use strict';

const fs = require('fs');
const readline = require('readline');
const { ModuleClient, Message } = require('azure-iot-device');

function transport(name) {
  switch (name) {
    case 'Amqp': return require('azure-iot-device-amqp').Amqp;
    case 'AmqpWs': return require('azure-iot-device-amqp').AmqpWs;
    case 'MqttWs': return require('azure-iot-device-mqtt').MqttWs;
    default: return require('azure-iot-device-mqtt').Mqtt;
  }
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

const client = ModuleClient.fromConnectionString(
  process.env.EdgeHubConnectionString, transport(process.env.TRANSPORT || 'Amqp'));
client.setOptions({ ca: fs.readFileSync(process.env.EdgeModuleCACertificateFile, 'utf-8') });
client.on('error', (err) => emit({ event: 'error', error: String(err && err.message || err) }));
client.on('disconnect', () => emit({ event: 'disconnected' }));

let twin = null;
async function getTwin() {
  if (twin === null) {
    twin = await client.getTwin();
  }
  return twin;
}

const methodAnswers = {};
let settleWith = 'complete';

async function handle(command) {
  const op = command.op;
  if (op === 'send') {
    const message = new Message(Buffer.from(command.body || ''));
    for (const [key, value] of Object.entries(command.properties || {})) {
      message.properties.add(key, value);
    }
    if (command.messageId) message.messageId = command.messageId;
    if (command.correlationId) message.correlationId = command.correlationId;
    if (command.contentType) message.contentType = command.contentType;
    if (command.contentEncoding) message.contentEncoding = command.contentEncoding;
    try {
      await client.sendOutputEvent(command.output, message);
      emit({ event: 'sent', id: command.id });
    } catch (err) {
      emit({ event: 'error', id: command.id, error: String(err && err.message || err) });
    }
  } else if (op === 'twin') {
    const t = await getTwin();
    await new Promise((resolve, reject) => t.get((err) => (err ? reject(err) : resolve())));
    emit({ event: 'twin', desired: t.properties.desired, reported: t.properties.reported });
  } else if (op === 'report') {
    const t = await getTwin();
    await new Promise((resolve, reject) =>
      t.properties.reported.update(command.patch, (err) => (err ? reject(err) : resolve())));
    emit({ event: 'reported' });
  } else if (op === 'desired') {
    const t = await getTwin();
    t.on('properties.desired', (patch) => emit({ event: 'desired', patch }));
    emit({ event: 'listening', what: 'desired' });
  } else if (op === 'inputs') {
    settleWith = command.settle || 'complete';
    client.on('inputMessage', (inputName, msg) => {
      const properties = {};
      for (let i = 0; i < msg.properties.count(); i++) {
        const p = msg.properties.getItem(i);
        properties[p.key] = p.value;
      }
      emit({
        event: 'input', inputName, body: msg.data.toString(), properties,
        messageId: msg.messageId, correlationId: msg.correlationId,
        contentType: msg.contentType, contentEncoding: msg.contentEncoding,
      });
      const settle = { complete: 'complete', reject: 'reject', abandon: 'abandon' }[settleWith];
      client[settle](msg, (err) => { if (err) emit({ event: 'error', error: String(err.message || err) }); });
    });
    emit({ event: 'listening', what: 'inputs' });
  } else if (op === 'method') {
    methodAnswers[command.name] = command;
    client.onMethod(command.name, (request, response) => {
      emit({ event: 'method', name: request.methodName, payload: request.payload });
      const answer = methodAnswers[request.methodName];
      response.send(answer.status, answer.payload, (err) => {
        if (err) emit({ event: 'error', error: String(err.message || err) });
      });
    });
    emit({ event: 'listening', what: 'method ' + command.name });
  } else if (op === 'close') {
    await client.close();
    emit({ event: 'closed' });
    process.exit(0);
  }
}

async function main() {
  try {
    await client.open();
  } catch (err) {
    emit({ event: 'error', error: String(err && err.message || err), stage: 'open' });
    process.exit(2);
  }
  emit({ event: 'connected' });
  const lines = readline.createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    if (!line.trim()) return;
    const command = JSON.parse(line);
    queue = queue.then(() => handle(command)).catch((err) =>
      emit({ event: 'error', id: command.id, error: String(err && err.message || err) }));
  });
  lines.on('close', () => queue.then(() => client.close()).then(() => process.exit(0)));
}

main();
